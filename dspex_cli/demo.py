"""`dspex demo`: a newcomer's first look, with no API key and no network.

Spawns `dspex serve` exactly as Elixir would and walks a short session against the
built-in mock LM, printing each request and reply.
"""

from __future__ import annotations

import json

from rich.console import Console

from bridge.client import WorkerClient, dspex_serve_argv

STEPS = [
    ("ping", {"initialization": True}),
    ("configure_lm", {"model": "mock"}),
    ("create_program", {"id": "qa", "signature": "question -> answer, confidence: float",
                        "program_type": "chain_of_thought"}),
    ("execute_program", {"program_id": "qa", "inputs": {"question": "What does DSPy stand for?"}}),
    ("list_programs", {}),
    ("get_stats", {}),
    ("shutdown", {}),
]


def run_demo() -> int:
    console = Console()
    console.print("[bold]Spawning[/] dspex serve --mode standalone (as an Elixir port would)")
    with WorkerClient(dspex_serve_argv("--mode", "standalone", "--worker-id", "demo")) as worker:
        for step, (command, args) in enumerate(STEPS, start=1):
            reply = worker.request(command, args, request_id=step, timeout=60)
            console.print(f"[cyan]→ {command}[/] {json.dumps(args)}")
            style = "green" if reply.get("success") else "red"
            console.print_json(json.dumps(reply), indent=1) if reply.get("success") else None
            if not reply.get("success"):
                console.print(f"[{style}]✗ {reply.get('error_type')}: {reply.get('error')}[/]")
                return 1
    console.print("[bold green]Done.[/] The worker answered every request and exited.")
    return 0
