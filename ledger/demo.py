"""`ledger demo`: a complete, realistic pipeline against a running service.

Raw customer data is registered as a source; a cleaning job, a feature job and a training job
report their runs through the real openlineage-python client; the model is registered and
validated; production is asked for and denied (the bias validation and an independent approval
are missing); both are added; production is asked again and allowed; the deployment is recorded;
the audit bundle is exported and verified offline with only the log's verifier key.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    DatasetEvent,
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    StaticDataset,
)
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    datasource_dataset,
    schema_dataset,
    source_code_location_job,
)
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpCompression, HttpConfig, HttpTransport

from ledger.errors import VerificationError
from ledger.governance.bundle import verify_bundle
from ledger.tlog.note import Checkpoint, NoteVerifier
from ledger.tlog.proofs import verify_consistency
from ledger.verify import load_kept

PRODUCER = "https://github.com/example/ledger-demo"
GIT = "https://git.example/ml/churn"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Demo:
    def __init__(self, url: str, admin_token: str, out: Path, say: Callable[[str], None]) -> None:
        self.url = url.rstrip("/")
        self.admin = admin_token
        self.out = out
        self.say = say
        self.suffix = uuid.uuid4().hex[:6]
        self.tokens: dict[str, str] = {}

    # --- helpers ---------------------------------------------------------------------------------

    def call(self, method: str, path: str, who: str, body: Any = None) -> requests.Response:
        token = self.admin if who == "admin" else self.tokens[who]
        return requests.request(
            method, self.url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def principal(self, label: str, role: str, **extra: Any) -> str:
        name = f"demo-{label}-{self.suffix}"
        r = self.call("POST", "/api/v1/principals", "admin", {"name": name, "roles": [role], **extra})
        r.raise_for_status()
        return str(r.json()["token"])

    def openlineage(self) -> OpenLineageClient:
        config = HttpConfig(
            url=self.url,
            auth=ApiKeyTokenProvider({"apiKey": self.tokens["pipeline"]}),
            compression=HttpCompression.GZIP,
            timeout=30,
        )
        return OpenLineageClient(transport=HttpTransport(config))

    def run_job(
        self,
        client: OpenLineageClient,
        namespace: str,
        job: str,
        inputs: list[InputDataset],
        outputs: list[OutputDataset],
    ) -> str:
        run_id = str(uuid.uuid4())
        facets = {
            "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
                type="git", url=GIT, version="9c1e4b7"
            )
        }
        for state in (RunState.START, RunState.COMPLETE):
            client.emit(
                RunEvent(
                    eventType=state,
                    eventTime=_now(),
                    run=Run(runId=run_id),
                    job=Job(namespace=namespace, name=job, facets=facets),
                    producer=PRODUCER,
                    inputs=inputs,
                    outputs=outputs,
                )
            )
        self.say(f"  run {run_id} of {namespace}/{job}: START, COMPLETE")
        return run_id

    # --- the story -------------------------------------------------------------------------------

    def run(self) -> int:
        self.say(f"1. principals for this demo (suffix {self.suffix}): pipeline, registrar, approver, auditor")
        self.tokens = {
            label: self.principal(label, role)
            for label, role in (
                ("pipeline", "pipeline"),
                ("registrar", "pipeline"),
                ("approver", "approver"),
                ("auditor", "auditor"),
            )
        }
        client = self.openlineage()
        raw, clean, features = (
            f"raw/customers-{self.suffix}",
            f"clean/customers-{self.suffix}",
            f"features/churn-{self.suffix}",
        )

        def version(v: str) -> dict[str, Any]:
            return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=v)}

        self.say("2. raw data registered as a declared source (a DatasetEvent with a dataSource facet)")
        client.emit(
            DatasetEvent(
                eventTime=_now(),
                producer=PRODUCER,
                dataset=StaticDataset(
                    namespace="s3://lake",
                    name=raw,
                    facets={
                        "dataSource": datasource_dataset.DatasourceDatasetFacet(
                            name="crm", uri="postgres://crm/customers"
                        ),
                        **version("2026-11-01"),
                        "schema": schema_dataset.SchemaDatasetFacet(
                            fields=[
                                schema_dataset.SchemaDatasetFacetFields(name="customer_id", type="string"),
                                schema_dataset.SchemaDatasetFacetFields(name="email", type="string"),
                            ]
                        ),
                    },
                ),
            )
        )
        self.say("3. clean, build features, train (through the openlineage-python client)")
        self.run_job(
            client,
            "etl",
            "clean_customers",
            [InputDataset(namespace="s3://lake", name=raw, facets=version("2026-11-01"))],
            [OutputDataset(namespace="s3://lake", name=clean, facets=version("c-17"))],
        )
        self.run_job(
            client,
            "etl",
            "build_features",
            [InputDataset(namespace="s3://lake", name=clean, facets=version("c-17"))],
            [OutputDataset(namespace="s3://lake", name=features, facets=version("f-5"))],
        )
        train = self.run_job(
            client,
            "ml",
            "train_churn",
            [InputDataset(namespace="s3://lake", name=features, facets=version("f-5"))],
            [OutputDataset(namespace="s3://models", name=f"churn-{self.suffix}")],
        )

        model = f"churn-{self.suffix}"
        base = f"/api/v1/models/{model}/versions"
        self.say(f"4. register {model} version 1 (by the registrar) and record a performance validation")
        r = self.call(
            "POST",
            base,
            "registrar",
            {
                "version": "1",
                "artifact": {"uri": f"s3://models/{model}/1", "digest": _digest(model)},
                "training_run_id": train,
                "model_card": {
                    "intended_use": "churn scoring",
                    "owner": "ml-team",
                    "limitations": "EU customers",
                    "risk_tier": "high",
                },
            },
        )
        r.raise_for_status()
        self._validation(base, "performance", {"auc": 0.91}, {"auc": {"min": 0.85}})

        self.say("5. ask for production: the policy denies it, and says why")
        r = self.call("POST", f"{base}/1/promotions", "pipeline", {"stage": "production"})
        if r.status_code != 403:
            self.say(f"   expected a denial, got {r.status_code}: {r.text}")
            return 1
        for v in r.json()["decision"]["violations"]:
            self.say(f"   - {v}")

        self.say("6. add the missing bias validation and an independent approval")
        self._validation(base, "bias", {"demographic_parity_gap": 0.02}, {"demographic_parity_gap": {"max": 0.05}})
        self.call(
            "POST", f"{base}/1/approvals", "approver", {"stage": "production", "comment": "reviewed the model card"}
        ).raise_for_status()

        self.say("7. ask again: allowed")
        r = self.call("POST", f"{base}/1/promotions", "pipeline", {"stage": "production"})
        if r.status_code != 201:
            self.say(f"   expected 201, got {r.status_code}: {r.text}")
            return 1
        self.say(f"   decision recorded at seq {r.json()['decision']['seq']}")

        self.say("8. record the deployment")
        self.call(
            "POST",
            f"{base}/1/deployments",
            "pipeline",
            {"stage": "production", "environment": "prod-eu", "endpoint": "https://ml.example/churn"},
        ).raise_for_status()

        self.say("9. export the audit bundle and verify it offline")
        bundle = self.call("GET", f"/api/v1/provenance/models/{model}/versions/1/bundle", "auditor").json()
        path = self.out / f"bundle-{model}-1.json"
        path.write_text(json.dumps(bundle, indent=1))
        keys = requests.get(self.url + "/api/v1/log/keys", timeout=30).json()
        vkey = next(k["verifier_key"] for k in keys["keys"] if k["current"])
        self.say(f"   {verify_bundle(bundle, vkey)}")
        self.say(f"   wrote {path}; verify it yourself with:")
        self.say(f"   ledger verify {path} --key '{vkey}'")
        for name, verdict in bundle["report"]["verdicts"].items():
            self.say(f"   {name}: {'ok' if verdict['ok'] else 'missing ' + '; '.join(verdict['missing'])}")
        return self._check_kept_checkpoint(vkey)

    def _check_kept_checkpoint(self, vkey: str) -> int:
        """The log must extend the checkpoint this demo kept on its last run (no split view, no
        rewritten history); then the current one is kept for the next run."""
        self.say("10. check the log against the checkpoint kept by the last run")
        kept_path = self.out / "last-checkpoint.txt"
        note = requests.get(self.url + "/api/v1/log/checkpoint", timeout=30)
        note.raise_for_status()
        current = Checkpoint.parse(NoteVerifier.parse(vkey).verify(note.text))
        if kept_path.exists():
            try:
                kept = load_kept(kept_path.read_text(), vkey)
                r = self.call(
                    "GET", f"/api/v1/log/proof/consistency?first={kept.size}&second={current.size}", "auditor"
                )
                if r.status_code == 400:  # first > second: the log has fewer entries than the kept checkpoint
                    self.say(f"   FAILED: the log has {current.size} entries, fewer than the {kept.size} kept")
                    return 1
                r.raise_for_status()
                proof = [bytes.fromhex(h) for h in r.json()["hashes"]]
                verify_consistency(kept.size, current.size, kept.root_hash, current.root_hash, proof)
            except VerificationError as e:
                self.say(f"   FAILED: the log is not consistent with the checkpoint kept in {kept_path}: {e.detail}")
                return 1
            self.say(f"   consistent with the checkpoint of size {kept.size} kept in {kept_path}")
        else:
            self.say(f"   no checkpoint kept yet: {kept_path} will hold this one for the next run")
        tmp = kept_path.with_suffix(".tmp")
        tmp.write_text(note.text)
        tmp.replace(kept_path)
        return 0

    def _validation(self, base: str, kind: str, metrics: dict[str, float], thresholds: dict[str, Any]) -> None:
        r = self.call(
            "POST",
            f"{base}/1/validations",
            "pipeline",
            {
                "type": kind,
                "metrics": metrics,
                "thresholds": thresholds,
                "report": {"uri": f"s3://reports/{kind}.html", "digest": _digest(kind)},
            },
        )
        r.raise_for_status()
        self.say(f"   {kind} validation recorded: passed={r.json()['validation']['passed']}")


def run_demo(url: str, admin_token: str, out: Path, say: Callable[[str], None]) -> int:
    return Demo(url, admin_token, out, say).run()
