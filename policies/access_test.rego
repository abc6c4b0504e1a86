# Unit tests of access.rego, run by ledger.policy.engine.run_rego_tests (and pytest). Input cases
# replace `with input as` (which crashes regopy 1.5.2; see promotion_test.rego): each case changes one
# thing in `cleared_read`, a permitted read of a pii dataset, and gives the exact expected `deny` set.
package ledger.access_test

import rego.v1

import data.ledger.access

cleared_read := {
	"principal": {"name": "bob", "roles": ["analyst"], "clearances": ["pii"]},
	"dataset": {"namespace": "s3://raw", "name": "customers", "tags": ["pii"]},
	"action": "read",
	"purpose": "fraud-investigation",
	"config": {"allowed_purposes": {
		"pii": ["fraud-investigation", "regulatory-reporting"],
		"phi": ["treatment"],
	}},
}

patched(ops) := json.patch(cleared_read, ops)


pii_purposes := "allowed purposes: fraud-investigation, regulatory-reporting"

test_only_pii_phi_and_confidential_are_sensitive if {
	access.sensitive_tags == {"pii", "phi", "confidential"}
}

test_read_is_the_only_known_action if {
	access.known_actions == {"read"}
}

cases.cleared_principal_reads_pii_for_an_allowed_purpose := {"input": cleared_read, "deny": set()}

cases.untagged_dataset_needs_no_clearance_or_purpose := {
	"input": patched([
		{"op": "replace", "path": "/dataset/tags", "value": []},
		{"op": "replace", "path": "/principal/clearances", "value": []},
		{"op": "remove", "path": "/purpose"},
	]),
	"deny": set(),
}

cases.non_sensitive_tags_need_no_clearance := {"input": patched([{"op": "replace", "path": "/dataset/tags", "value": ["internal", "gold"]}]), "deny": set()}

cases.missing_clearance := {
	"input": patched([{"op": "replace", "path": "/principal/clearances", "value": []}]),
	"deny": {"principal bob lacks the pii clearance required to read dataset s3://raw:customers"},
}

cases.missing_clearances_list_means_no_clearance := {
	"input": patched([{"op": "remove", "path": "/principal/clearances"}]),
	"deny": {"principal bob lacks the pii clearance required to read dataset s3://raw:customers"},
}

cases.purpose_not_allowed := {
	"input": patched([{"op": "replace", "path": "/purpose", "value": "marketing"}]),
	"deny": {concat("", ["purpose marketing is not allowed for pii data (dataset s3://raw:customers); ", pii_purposes])},
}

cases.missing_purpose_is_not_allowed := {
	"input": patched([{"op": "remove", "path": "/purpose"}]),
	"deny": {concat("", ["purpose null is not allowed for pii data (dataset s3://raw:customers); ", pii_purposes])},
}

cases.sensitive_tag_without_configured_purposes_admits_none := {
	"input": patched([
		{"op": "replace", "path": "/dataset/tags", "value": ["confidential"]},
		{"op": "replace", "path": "/principal/clearances", "value": ["confidential"]},
	]),
	"deny": {"purpose fraud-investigation is not allowed for confidential data (dataset s3://raw:customers); allowed purposes: none configured"},
}

cases.every_sensitive_tag_is_checked := {
	"input": patched([{"op": "replace", "path": "/dataset/tags", "value": ["pii", "phi"]}]),
	"deny": {
		"principal bob lacks the phi clearance required to read dataset s3://raw:customers",
		"purpose fraud-investigation is not allowed for phi data (dataset s3://raw:customers); allowed purposes: treatment",
	},
}

cases.unknown_action_is_denied := {
	"input": patched([{"op": "replace", "path": "/action", "value": "delete"}]),
	"deny": {"unknown action delete on dataset s3://raw:customers (known actions: read)"},
}

cases.missing_action_is_denied := {
	"input": patched([{"op": "remove", "path": "/action"}]),
	"deny": {"unknown action null on dataset s3://raw:customers (known actions: read)"},
}

cases.malformed_tags_are_denied_not_skipped := {
	"input": patched([{"op": "replace", "path": "/dataset/tags", "value": "pii"}]),
	"deny": {"access input is malformed: dataset.tags is not a list"},
}

cases.empty_input_is_denied := {
	"input": {},
	"deny": {
		"access input has no dataset",
		"access input has no principal",
		"unknown action null on dataset null:null (known actions: read)",
	},
}
