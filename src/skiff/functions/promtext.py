"""The gateway's Prometheus metrics, in the text exposition format (no client library in the image).

Invocations and errors by function and status, a latency histogram, cold starts, and instances.
"""

from __future__ import annotations

from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_Fn = tuple[str, str]  # namespace, function


class GatewayMetrics:
    def __init__(self) -> None:
        self.invocations: dict[tuple[str, str, int], int] = defaultdict(int)
        self.cold_starts: dict[_Fn, int] = defaultdict(int)
        self.buckets: dict[_Fn, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.sums: dict[_Fn, float] = defaultdict(float)
        self.counts: dict[_Fn, int] = defaultdict(int)
        self.instances: dict[_Fn, int] = {}

    def observe(self, namespace: str, function: str, status: int, duration: float) -> None:
        self.invocations[(namespace, function, status)] += 1
        fn = (namespace, function)
        self.sums[fn] += duration
        self.counts[fn] += 1
        for i, bound in enumerate(BUCKETS):
            if duration <= bound:
                self.buckets[fn][i] += 1

    def render(self) -> str:
        out = ["# HELP skiff_function_invocations_total Invocations answered, by status code.",
               "# TYPE skiff_function_invocations_total counter"]  # fmt: skip
        for (ns, fn, code), n in sorted(self.invocations.items()):
            out.append(f'skiff_function_invocations_total{{namespace="{ns}",function="{fn}",code="{code}"}} {n}')
        out += ["# HELP skiff_function_errors_total Invocations answered with a 5xx or 429.",
                "# TYPE skiff_function_errors_total counter"]  # fmt: skip
        errors: dict[_Fn, int] = defaultdict(int)
        for (ns, fn, code), n in self.invocations.items():
            if code >= 500 or code == 429:
                errors[(ns, fn)] += n
        for (ns, fn), n in sorted(errors.items()):
            out.append(f'skiff_function_errors_total{{namespace="{ns}",function="{fn}"}} {n}')
        out += ["# HELP skiff_function_duration_seconds Invocation latency through the gateway.",
                "# TYPE skiff_function_duration_seconds histogram"]  # fmt: skip
        for (ns, fn), counts in sorted(self.buckets.items()):
            labels = f'namespace="{ns}",function="{fn}"'
            for bound, n in zip(BUCKETS, counts, strict=True):
                out.append(f'skiff_function_duration_seconds_bucket{{{labels},le="{bound}"}} {n}')
            out.append(f'skiff_function_duration_seconds_bucket{{{labels},le="+Inf"}} {self.counts[(ns, fn)]}')
            out.append(f"skiff_function_duration_seconds_sum{{{labels}}} {self.sums[(ns, fn)]}")
            out.append(f"skiff_function_duration_seconds_count{{{labels}}} {self.counts[(ns, fn)]}")
        out += ["# HELP skiff_function_cold_starts_total Instances started for calls waiting on none.",
                "# TYPE skiff_function_cold_starts_total counter"]  # fmt: skip
        for (ns, fn), n in sorted(self.cold_starts.items()):
            out.append(f'skiff_function_cold_starts_total{{namespace="{ns}",function="{fn}"}} {n}')
        out += ["# HELP skiff_function_instances Ready instances.", "# TYPE skiff_function_instances gauge"]
        for (ns, fn), n in sorted(self.instances.items()):
            out.append(f'skiff_function_instances{{namespace="{ns}",function="{fn}"}} {n}')
        return "\n".join(out) + "\n"
