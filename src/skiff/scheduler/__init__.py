"""The scheduler: a queue of unscheduled pods, a plugin framework, and binding through pods/binding."""
