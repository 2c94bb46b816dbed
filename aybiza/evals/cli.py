"""``aybiza eval scenarios.yaml [--server URL] [--json out.json]``: run, print the table, exit non-zero on failure.

``--no-latency`` measures and reports each turn's latency without failing on
it: for a machine whose speed says nothing about the product (a loaded CI
box running the test suite); speed budgets are ``aybiza bench``'s.

Exit codes: 0 every scenario passed; 1 one failed; 2 the file, the server or
the tokens were unusable (nothing was judged).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from ..errors import AybizaError
from .report import as_json, table, write_json
from .runner import ScenarioResult, Target, run_scenarios
from .scenarios import load_scenarios

__all__ = ["eval_main"]


def _remote_target(server: str, *, auth_token: str | None, api_token: str | None, public_url: str | None,
                   agents_dir: Path) -> Target:
    """A running server: tokens from the flags, else the environment, else the local files in the data dir."""
    from ..config import Settings
    from ..guard import local_api_token
    from ..twilio_auth import auth_token_for

    settings = Settings()
    auth = auth_token or auth_token_for(settings, create=False)
    api = api_token or settings.api_token or (local_api_token(settings)
                                              if (settings.data_dir / "api_token").is_file() else "")
    if not auth:
        raise AybizaError("no Twilio auth token: pass --auth-token or set TWILIO_AUTH_TOKEN")
    if not api:
        raise AybizaError("no API token: pass --api-token or set AYBIZA_API_TOKEN")
    return Target(url=server.rstrip("/"), auth_token=auth, api_token=api, public_url=public_url,
                  agents_dir=agents_dir, account_sid=settings.twilio_account_sid or None)


def eval_main(path: Path, *, server: str | None = None, json_out: Path | None = None,
              auth_token: str | None = None, api_token: str | None = None, public_url: str | None = None,
              agents_dir: Path | None = None, only: list[str] | None = None, server_log: Path | None = None,
              judge_latency: bool = True, parallel: int = 1) -> int:
    """Run the scenarios of ``path`` and report; the exit code."""
    from ..config import Settings

    try:
        scenarios = load_scenarios(path)
        agents = agents_dir or Path(Settings().agents_dir)  # Settings reads AYBIZA_AGENTS_DIR
        wanted = set(only) if only else None

        async def run(target: Target) -> list[ScenarioResult]:
            return await run_scenarios(target, scenarios, only=wanted, judge_latency=judge_latency,
                                       parallel=parallel)

        if server:
            target = _remote_target(server, auth_token=auth_token, api_token=api_token, public_url=public_url,
                                    agents_dir=agents)
            results = anyio.run(run, target)
            where = server
        else:
            from .local import local_server

            print(f"aybiza eval: starting a server (agents in {agents}) ...", file=sys.stderr)
            with local_server(agents, log_path=server_log) as target:
                results = anyio.run(run, target)
            where = "local"
    except (AybizaError, RuntimeError) as error:
        print(f"aybiza eval: {error}", file=sys.stderr)
        return 2
    print(table(results), end="")
    if json_out is not None:
        write_json(json_out, as_json(results, source=str(path), server=where))
    return 0 if results and all(result.passed for result in results) else 1
