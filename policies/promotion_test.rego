# Unit tests of promotion.rego, run by ledger.policy.engine.run_rego_tests (and pytest).
#
# `with input as {...}` crashes regopy 1.5.2, so input-driven tests are written as cases:
# `cases.<name> := {"input": ..., "deny": {...}, "warn": {...}}`. The runner evaluates each input
# against package ledger.promotion exactly as the service does and requires the `deny` set (and the
# `warn` set, when the case gives one) to be exactly the expected one, so a rule that fires when it
# should not fails the case too. `test_*` rules are plain OPA-style tests evaluated with no input.
#
# Each case starts from `compliant`, a production promotion that satisfies every rule, and changes
# one thing with json.patch (regopy 1.5.2's object.union is not recursive, unlike OPA's).
package ledger.promotion_test

import rego.v1

import data.ledger.promotion

compliant := {
	"stage": "production",
	"now": "2026-11-21T22:41:07.123456Z",
	"config": {"max_validation_age_days": 90, "required_validations": ["performance", "bias"]},
	"requester": {"name": "ci-bot", "roles": ["pipeline"]},
	"model": {
		"name": "churn",
		"version": "3",
		"artifact": {"uri": "s3://models/churn/3", "digest": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"},
		"registered_by": "ml-team",
		"training_run_id": "0b7a2c1e-7f7e-4a55-9d8e-1c2b3a4d5e6f",
	},
	"training_run": {
		"id": "0b7a2c1e-7f7e-4a55-9d8e-1c2b3a4d5e6f",
		"state": "COMPLETE",
		"completed_at": "2026-11-01T10:00:00Z",
		"job": {"namespace": "ml", "name": "train_churn", "code_version": "4f2a9c1"},
		"principals": ["etl-nightly"],
	},
	"upstream": {"datasets": [
		{
			"namespace": "s3://raw", "name": "customers", "version": "v1", "produced_by_run": null,
			"source": true, "tags": ["pii"], "classified": true,
		},
		{
			"namespace": "s3://features", "name": "churn_features", "version": "v7",
			"produced_by_run": "9a8b7c6d-0000-4000-8000-000000000001", "source": false, "tags": ["pii"],
			"classified": true,
		},
	]},
	"validations": [
		{
			"type": "performance", "passed": true, "recorded_at": "2026-11-02T10:00:00Z",
			"report_digest": "sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9", "seq": 12,
		},
		{
			"type": "bias", "passed": true, "recorded_at": "2026-11-02T11:00:00Z",
			"report_digest": "sha256:baa5a0964d3320fbc0c6a922140453c8513ea24ab8fd0577034804a967248096", "seq": 13,
		},
	],
	"approvals": [{
		"stage": "production", "approver": "alice", "approver_roles": ["approver"],
		"recorded_at": "2026-11-03T10:00:00Z", "seq": 14,
	}],
	"open_violations": [],
}

model := "model churn version 3"

run := "0b7a2c1e-7f7e-4a55-9d8e-1c2b3a4d5e6f"

sod := " (segregation of duties: the approver must hold the approver role and be neither the registrant nor a trainer): "

patched(ops) := json.patch(compliant, ops)


not_after_training(type, seq) := concat("", [
	"no qualifying ", type, " validation of ", model, ": seq ", seq,
	" was not recorded after the training run completed",
])

# --- Helpers (no input) -----------------------------------------------------------------------------

test_timestamps_in_utc_and_with_offsets_parse_to_the_same_instant if {
	promotion.ts_ns("2026-11-01T10:00:00Z") == promotion.ts_ns("2026-11-01T12:00:00+02:00")
	promotion.ts_ns("2026-11-01T10:00:00z") == promotion.ts_ns("2026-11-01T10:00:00+00:00")
	promotion.ts_ns("2026-11-01T10:00:00.5Z") - promotion.ts_ns("2026-11-01T10:00:00Z") == 500000000
}

test_text_renders_any_value if {
	promotion.text("s") == "s"
	promotion.text(12) == "12"
	promotion.text(null) == "null"
}

test_the_compliant_fixture_satisfies_the_input_contract if {
	is_array(compliant.upstream.datasets)
	count(compliant.validations) == 2
}

# --- The happy path ---------------------------------------------------------------------------------

cases.compliant_production_promotion_is_allowed := {"input": compliant, "deny": set(), "warn": set()}

cases.declared_source_needs_no_producing_run := {
	"input": patched([{"op": "replace", "path": "/upstream/datasets/0/produced_by_run", "value": null}]),
	"deny": set(),
}

cases.one_qualifying_approval_among_disqualified_ones_suffices := {
	"input": patched([
		{"op": "add", "path": "/approvals/-", "value": {"stage": "production", "approver": "ml-team", "approver_roles": ["approver"]}},
		{"op": "add", "path": "/approvals/-", "value": {"stage": "production", "approver": "etl-nightly", "approver_roles": ["approver"]}},
	]),
	"deny": set(),
}

cases.a_passing_validation_qualifies_despite_an_earlier_failure := {
	"input": patched([{"op": "add", "path": "/validations/-", "value": {
		"type": "performance", "passed": false, "recorded_at": "2026-11-01T12:00:00Z",
		"report_digest": "sha256:00", "seq": 11,
	}}]),
	"deny": set(),
}

cases.required_validation_types_are_configurable := {
	"input": patched([
		{"op": "replace", "path": "/config/required_validations", "value": ["performance"]},
		{"op": "remove", "path": "/validations/1"},
	]),
	"deny": set(),
}

cases.required_validations_default_to_performance_and_bias := {
	"input": patched([{"op": "remove", "path": "/config"}, {"op": "remove", "path": "/validations/1"}]),
	"deny": {concat("", ["no bias validation of ", model, " is recorded"])},
}

# --- Reproducibility --------------------------------------------------------------------------------

# Without the run there is no completion time, so no validation can postdate it either.
cases.training_run_not_recorded := {
	"input": patched([{"op": "replace", "path": "/training_run", "value": null}]),
	"deny": {
		concat("", ["training run ", run, " of ", model, " is not recorded in the ledger"]),
		not_after_training("bias", "13"),
		not_after_training("performance", "12"),
	},
}

cases.training_run_not_complete := {
	"input": patched([{"op": "replace", "path": "/training_run/state", "value": "RUNNING"}]),
	"deny": {concat("", ["training run ", run, " is RUNNING, not COMPLETE"])},
}

cases.failed_training_run := {
	"input": patched([{"op": "replace", "path": "/training_run/state", "value": "FAIL"}]),
	"deny": {concat("", ["training run ", run, " is FAIL, not COMPLETE"])},
}

cases.training_run_without_state := {
	"input": patched([{"op": "remove", "path": "/training_run/state"}]),
	"deny": {concat("", ["training run ", run, " is null, not COMPLETE"])},
}

cases.recorded_run_must_be_the_models_run := {
	"input": patched([{"op": "replace", "path": "/training_run/id", "value": "other"}]),
	"deny": {concat("", ["recorded training run other is not the training run ", run, " that ", model, " names"])},
}

cases.no_code_version := {
	"input": patched([{"op": "replace", "path": "/training_run/job/code_version", "value": null}]),
	"deny": {concat("", ["training run ", run, " (job ml:train_churn) has no code version recorded"])},
}

cases.empty_code_version := {
	"input": patched([{"op": "replace", "path": "/training_run/job/code_version", "value": ""}]),
	"deny": {concat("", ["training run ", run, " (job ml:train_churn) has no code version recorded"])},
}

# --- Traceability -----------------------------------------------------------------------------------

cases.upstream_dataset_without_version := {
	"input": patched([{"op": "replace", "path": "/upstream/datasets/1/version", "value": null}]),
	"deny": {"upstream dataset s3://features:churn_features has no version"},
}

cases.upstream_dataset_without_producer_that_is_not_a_source := {
	"input": patched([{"op": "replace", "path": "/upstream/datasets/0/source", "value": false}]),
	"deny": {"upstream dataset s3://raw:customers was not produced by a recorded run and is not a declared source"},
}

# --- Data protection --------------------------------------------------------------------------------

cases.unclassified_pii_upstream := {
	"input": patched([{"op": "replace", "path": "/upstream/datasets/1/classified", "value": false}]),
	"deny": {"upstream dataset s3://features:churn_features is tagged pii but has no approved classification"},
}

cases.open_violation_upstream := {
	"input": patched([{"op": "replace", "path": "/open_violations", "value": [{"id": 3, "dataset": "s3://raw:customers", "run_id": "r-9", "reason": "schema drift"}]}]),
	"deny": {"open policy violation 3 on upstream dataset s3://raw:customers (run r-9): schema drift"},
}

# --- Verifiability ----------------------------------------------------------------------------------

cases.missing_validation_type := {
	"input": patched([{"op": "remove", "path": "/validations/1"}]),
	"deny": {concat("", ["no bias validation of ", model, " is recorded"])},
}

cases.failed_validation := {
	"input": patched([{"op": "replace", "path": "/validations/0/passed", "value": false}]),
	"deny": {concat("", ["no qualifying performance validation of ", model, ": seq 12 did not pass"])},
}

cases.validation_without_report_digest := {
	"input": patched([{"op": "replace", "path": "/validations/1/report_digest", "value": null}]),
	"deny": {concat("", ["no qualifying bias validation of ", model, ": seq 13 has no report digest"])},
}

cases.validation_before_training_completion := {
	"input": patched([{"op": "replace", "path": "/validations/0/recorded_at", "value": "2026-11-01T09:59:59.999999Z"}]),
	"deny": {not_after_training("performance", "12")},
}

cases.validation_at_training_completion_does_not_count := {
	"input": patched([{"op": "replace", "path": "/validations/0/recorded_at", "value": "2026-11-01T10:00:00Z"}]),
	"deny": {not_after_training("performance", "12")},
}

# 11:30+02:00 is 09:30Z, half an hour before the run completed; 12:30+02:00 is half an hour after.
cases.offset_timestamp_before_training_completion := {
	"input": patched([{"op": "replace", "path": "/validations/0/recorded_at", "value": "2026-11-01T11:30:00+02:00"}]),
	"deny": {not_after_training("performance", "12")},
}

cases.offset_timestamp_after_training_completion := {
	"input": patched([{"op": "replace", "path": "/validations/0/recorded_at", "value": "2026-11-01T12:30:00+02:00"}]),
	"deny": set(),
}

cases.stale_validations := {
	"input": patched([{"op": "replace", "path": "/now", "value": "2027-02-15T00:00:00Z"}]), # 105 days after the validations
	"deny": {
		concat("", ["no qualifying bias validation of ", model, ": seq 13 is older than 90 days"]),
		concat("", ["no qualifying performance validation of ", model, ": seq 12 is older than 90 days"]),
	},
}

cases.validation_age_limit_is_configurable := {
	"input": patched([{"op": "replace", "path": "/config/max_validation_age_days", "value": 10}]),
	"deny": {
		concat("", ["no qualifying bias validation of ", model, ": seq 13 is older than 10 days"]),
		concat("", ["no qualifying performance validation of ", model, ": seq 12 is older than 10 days"]),
	},
}

cases.every_problem_of_a_validation_is_named := {
	"input": patched([
		{"op": "replace", "path": "/validations/0/passed", "value": false},
		{"op": "replace", "path": "/validations/0/report_digest", "value": null},
		{"op": "replace", "path": "/validations/0/recorded_at", "value": "2026-01-01T00:00:00Z"},
	]),
	"deny": {concat("", [
		"no qualifying performance validation of ", model, ": seq 12 did not pass and has no report digest",
		" and is older than 90 days and was not recorded after the training run completed",
	])},
}

cases.validation_nearing_expiry_warns := {
	"input": patched([{"op": "replace", "path": "/now", "value": "2027-01-01T00:00:00Z"}]), # 59.5 days after the validations
	"deny": set(),
	"warn": {
		concat("", ["the newest bias validation of ", model, " is 59 days old; it expires after 90 days"]),
		concat("", ["the newest performance validation of ", model, " is 59 days old; it expires after 90 days"]),
	},
}

# --- Sign-off and segregation of duties -------------------------------------------------------------

cases.no_approval := {
	"input": patched([{"op": "replace", "path": "/approvals", "value": []}]),
	"deny": {concat("", ["no approval of ", model, " for stage production is recorded"])},
}

cases.approval_for_another_stage_does_not_count := {
	"input": patched([{"op": "replace", "path": "/approvals/0/stage", "value": "staging"}]),
	"deny": {concat("", ["no approval of ", model, " for stage production is recorded"])},
}

cases.registrant_approval_does_not_count := {
	"input": patched([{"op": "replace", "path": "/approvals/0/approver", "value": "ml-team"}]),
	"deny": {concat("", ["no qualifying approval of ", model, " for stage production", sod, "ml-team registered the model"])},
}

cases.trainer_approval_does_not_count := {
	"input": patched([{"op": "replace", "path": "/approvals/0/approver", "value": "etl-nightly"}]),
	"deny": {concat("", ["no qualifying approval of ", model, " for stage production", sod, "etl-nightly trained the model"])},
}

cases.approval_without_approver_role_does_not_count := {
	"input": patched([{"op": "replace", "path": "/approvals/0/approver_roles", "value": ["pipeline"]}]),
	"deny": {concat("", ["no qualifying approval of ", model, " for stage production", sod, "alice does not hold the approver role"])},
}

cases.every_disqualified_approval_is_named := {
	"input": patched([{"op": "replace", "path": "/approvals", "value": [
		{"stage": "production", "approver": "ml-team", "approver_roles": []},
		{"stage": "production", "approver": "etl-nightly", "approver_roles": ["approver"]},
	]}]),
	"deny": {concat("", [
		"no qualifying approval of ", model, " for stage production", sod,
		"etl-nightly trained the model; ml-team does not hold the approver role and registered the model",
	])},
}

cases.high_risk_model_with_one_approval_warns := {
	"input": patched([{"op": "add", "path": "/model/model_card", "value": {"risk_tier": "high"}}]),
	"deny": set(),
	"warn": {concat("", [model, " has model card risk tier high but 1 qualifying approval(s) for stage production; two are recommended"])},
}

# --- Other stages -----------------------------------------------------------------------------------

cases.staging_checks_reproducibility_only := {
	"input": patched([
		{"op": "replace", "path": "/stage", "value": "staging"},
		{"op": "replace", "path": "/validations", "value": []},
		{"op": "replace", "path": "/approvals", "value": []},
		{"op": "replace", "path": "/upstream/datasets/1/version", "value": null},
		{"op": "replace", "path": "/upstream/datasets/1/classified", "value": false},
	]),
	"deny": set(),
	"warn": {"upstream dataset s3://features:churn_features is tagged pii but has no approved classification"},
}

cases.staging_still_needs_a_complete_run_with_code_version := {
	"input": patched([
		{"op": "replace", "path": "/stage", "value": "staging"},
		{"op": "replace", "path": "/training_run/state", "value": "RUNNING"},
		{"op": "replace", "path": "/training_run/job/code_version", "value": null},
	]),
	"deny": {
		concat("", ["training run ", run, " is RUNNING, not COMPLETE"]),
		concat("", ["training run ", run, " (job ml:train_churn) has no code version recorded"]),
	},
}

# --- Fail closed on malformed input -----------------------------------------------------------------

cases.empty_input_is_denied := {
	"input": {},
	"deny": {
		"policy input has no model",
		"policy input has no stage",
		"policy input has no valid now (RFC 3339 time)",
		"policy input is malformed: approvals is missing or not a list",
		"policy input is malformed: open_violations is missing or not a list",
		"policy input is malformed: upstream.datasets is missing or not a list",
		"policy input is malformed: validations is missing or not a list",
		"training run null of model null version null is not recorded in the ledger",
	},
}

cases.missing_upstream_is_denied_not_skipped := {
	"input": patched([{"op": "remove", "path": "/upstream"}]),
	"deny": {"policy input is malformed: upstream.datasets is missing or not a list"},
}

cases.open_violations_that_are_not_a_list_are_denied := {
	"input": patched([{"op": "replace", "path": "/open_violations", "value": {"3": "x"}}]),
	"deny": {"policy input is malformed: open_violations is missing or not a list"},
}

cases.messages_keep_unusual_characters := {
	"input": patched([
		{"op": "replace", "path": "/upstream/datasets/1/version", "value": null},
		{"op": "replace", "path": "/upstream/datasets/1/name", "value": "q\"uote\\ é"},
	]),
	"deny": {"upstream dataset s3://features:q\"uote\\ é has no version"},
}

# --- Long lists: at most promotion.max_listed (20) items named per rule, then a count ----------------

many_unversioned := [ds |
	some i in numbers.range(101, 123)
	ds := {
		"namespace": "s3://many", "name": concat("", ["d", format_int(i, 10)]), "version": null,
		"produced_by_run": "9a8b7c6d-0000-4000-8000-000000000001", "source": false, "tags": [], "classified": false,
	}
]

cases.many_unversioned_datasets_are_listed_up_to_twenty_then_counted := {
	"input": patched([{"op": "replace", "path": "/upstream/datasets", "value": many_unversioned}]),
	"deny": {msg |
		some i in numbers.range(101, 120)
		msg := concat("", ["upstream dataset s3://many:d", format_int(i, 10), " has no version"])
	} | {"and 3 more upstream datasets have no version"},
}

cases.twenty_unversioned_datasets_are_all_listed := {
	"input": patched([{"op": "replace", "path": "/upstream/datasets", "value": array.slice(many_unversioned, 0, 20)}]),
	"deny": {msg |
		some i in numbers.range(101, 120)
		msg := concat("", ["upstream dataset s3://many:d", format_int(i, 10), " has no version"])
	},
}

many_violations := [v | some i in numbers.range(1, 22); v := {"id": i, "dataset": "s3://raw:customers", "run_id": "r-9", "reason": "drift"}]

cases.many_open_violations_are_listed_up_to_twenty_then_counted := {
	"input": patched([{"op": "replace", "path": "/open_violations", "value": many_violations}]),
	"deny": {msg |
		some i in numbers.range(1, 20)
		msg := concat("", ["open policy violation ", format_int(i, 10), " on upstream dataset s3://raw:customers (run r-9): drift"])
	} | {"and 2 more open policy violations on upstream datasets"},
}

cases.high_risk_model_approved_twice_by_one_approver_still_warns := {
	"input": patched([
		{"op": "add", "path": "/model/model_card", "value": {"risk_tier": "high"}},
		{"op": "add", "path": "/approvals/-", "value": {"stage": "production", "approver": "alice", "approver_roles": ["approver"], "seq": 15}},
	]),
	"deny": set(),
	"warn": {concat("", [model, " has model card risk tier high but 1 qualifying approval(s) for stage production; two are recommended"])},
}

cases.high_risk_model_approved_by_two_approvers_does_not_warn := {
	"input": patched([
		{"op": "add", "path": "/model/model_card", "value": {"risk_tier": "high"}},
		{"op": "add", "path": "/approvals/-", "value": {"stage": "production", "approver": "bob", "approver_roles": ["approver"], "seq": 15}},
	]),
	"deny": set(),
	"warn": set(),
}
