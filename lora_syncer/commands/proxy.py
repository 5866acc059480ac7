"""`lora-syncer proxy`: only the weighted rewrite proxy, with its own health/metrics server.

    lora-syncer proxy --rules rules.yaml --server http://localhost:8000 --proxy-port 8081 --metrics-port 8080

Every target counts as loaded (there is no syncer in this process). With `--pool NAME=URL[@WEIGHT]`
(repeatable) or an `HTTPRoute` in the rules file it splits traffic between pools by weight. SIGTERM or SIGINT stops
it gracefully (exit 0): stop accepting, let in-flight requests finish within
`--shutdown-grace`, then close; a second signal exits at once (status 1), as `run` does.
"""

from __future__ import annotations

import argparse
import sys

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from lora_syncer.health import HealthSources, build_health_app
from lora_syncer.logs import configure_logging
from lora_syncer.options.parser import fail
from lora_syncer.proxy.options import ProxyOptions, proxy_options_from_args
from lora_syncer.proxy.service import ProxyService
from lora_syncer.runtime import StopSignals

log = structlog.get_logger("lora_syncer.proxy")


async def serve(options: ProxyOptions, metrics_host: str, metrics_port: int, grace: float) -> int:
    """Run the proxy (and its health server) until SIGTERM/SIGINT; 0 on a clean stop."""
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    service = ProxyService(options, registry=registry)
    signals = StopSignals()
    signals.install()
    health: web.AppRunner | None = None
    try:
        try:
            await service.start()
            if metrics_port >= 0:
                sources = HealthSources(
                    registry=registry,
                    sections={"proxy": service.status, "rollouts": service.rollouts_status},
                    ready_checks=[service.ready],
                    live_checks=[service.supervisor.live],
                    routes=service.health_routes(),
                )
                health = web.AppRunner(build_health_app(sources), handle_signals=False, access_log=None)
                await health.setup()
                await web.TCPSite(health, metrics_host, metrics_port).start()
        except OSError as exc:
            print(f"lora-syncer proxy: cannot listen: {exc}", file=sys.stderr)
            return 1
        pools = service.core.pools
        where = (
            ", ".join(f"{n}={p.base}@{p.spec.weight}" for n, p in pools.pools.items())
            if pools.health_tracked
            else options.upstream
        )
        print(
            f"lora-syncer proxy listening on {options.host}:{service.port}, forwarding to {where}",
            file=sys.stderr,
            flush=True,
        )
        await signals.stop.wait()
        log.info("stopping proxy", grace_seconds=grace)
        await service.stop(grace)
        return 0
    finally:
        await service.stop(0)
        if health is not None:
            await health.cleanup()
        signals.remove()


def run(args: argparse.Namespace) -> int:
    """Entry point of `lora-syncer proxy`."""
    if not args.rules and not args.pool:
        fail(
            "--rules / LORA_SYNCER_RULES: is required unless --pool is given: "
            "the rules file to serve, or --pool NAME=URL[@WEIGHT] to split between pools"
        )
    try:
        options = proxy_options_from_args(args, args.server, pools_from_rules=True)
    except ValueError as exc:  # settings that contradict each other
        fail(str(exc))
    configure_logging(args.log_format, args.log_level)  # after the checks: a usage error logs nothing
    from lora_syncer.runtime import run_async

    return run_async(serve(options, args.metrics_host, args.metrics_port, args.shutdown_grace))
