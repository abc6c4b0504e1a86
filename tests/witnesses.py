"""Witnesses served in this process for tests: `ledger.witness` behind a threaded werkzeug server on a
free loopback port (real HTTP, real keys and state files)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from ledger.jobs.witnesses import WitnessConfig
from ledger.tlog.note import NoteVerifier
from ledger.witness import Witness, WitnessState, create_witness_app, load_or_create_key


@dataclass
class RunningWitness:
    url: str
    vkey: str
    witness: Witness
    server: BaseWSGIServer

    def trust(self, log_vkey: str) -> None:
        v = NoteVerifier.parse(log_vkey)
        self.witness.logs.setdefault(v.name, []).append(v)

    def config(self) -> WitnessConfig:
        return WitnessConfig(self.url, self.witness.signer.verifier)


def serve(app: Any) -> tuple[BaseWSGIServer, str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def start_witness(directory: Path, name: str, *logs: str) -> RunningWitness:
    w = Witness(load_or_create_key(directory, name), list(logs), WitnessState(directory))
    server, url = serve(create_witness_app(w))
    return RunningWitness(url, w.signer.verifier.line(), w, server)
