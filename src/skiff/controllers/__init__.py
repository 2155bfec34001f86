"""Level-triggered controllers, one module per controller, run by the controller manager."""
