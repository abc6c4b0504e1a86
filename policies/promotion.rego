# Default promotion policy (DESIGN.md section 5). Conftest conventions: promotion is allowed iff
# `deny` is empty; `warn` is advisory.
#
# Input (built by the service from the log):
#   stage            target stage, e.g. "production"
#   now              RFC 3339 time of the decision (the only clock the policy reads)
#   config           {"max_validation_age_days": 90, "required_validations": ["performance", "bias"]}
#   requester        {"name", "roles": [...]}
#   model            {"name", "version", "artifact": {"uri", "digest"}, "registered_by",
#                     "training_run_id", optionally "model_card": {"risk_tier", ...}}
#   training_run     null, or {"id", "state", "completed_at" (RFC 3339 or null),
#                     "job": {"namespace", "name", "code_version" (or null)},
#                     "principals": [names that posted this run's events: the trainers]}
#   upstream         {"datasets": [{"namespace", "name", "version" (or null),
#                     "produced_by_run" (run id or null), "source": bool, "tags": [...],
#                     "classified": bool}]}  (the whole upstream lineage closure)
#   validations      [{"type", "passed", "recorded_at", "report_digest" (or null), "seq"}]
#                    (only validations of this exact model version)
#   approvals        [{"stage", "approver", "approver_roles": [...], "recorded_at", "seq"}]
#   open_violations  [{"id", "dataset" ("ns:name"), "run_id", "reason"}] (upstream only)
#
# Stages. "production" gets the full gate. Other stages (e.g. "staging") get the reproducibility
# checks only (training run recorded and COMPLETE, code version recorded), so teams can try a model
# before the validations and sign-off exist; unclassified PII and open violations upstream are
# warnings there, not denials. Add a stage to `gated_stages` to gate it like production.
#
# Fail closed: a missing field reads as null (`default x := null`, `object.get(..., null)`), never
# as undefined, so it cannot make a `deny` body undefined (which would silently allow); a malformed
# input is itself a violation.
#
# regopy 1.5.2 notes: messages are assembled with `concat`, not `sprintf`, because
# `sprintf("x %s", [s])` wraps `s` in quotes when `s` was computed by `concat` or `lower`, and then
# emits invalid JSON. Whole-input arguments such as `object.get(input, [...])` are avoided: each call
# copies the input (about 0.4 ms for a typical promotion input; a whole decision takes 3-5 ms).
#
# Linear time. regopy 1.5.2 builds a set (a set comprehension, an object comprehension or a partial
# `contains` rule) in time quadratic in its size: 4,000 distinct strings take 9 s, against 30 ms for
# the same array. So no set or object here grows with the input lists. Lists are filtered into
# arrays; a per-item rule names at most `max_listed` items, then one message says how many more
# there are; sets hold only a few distinct values (validation types). Membership in a set built from
# the input (`trainers`) is quadratic in that set's size only; the engine's time budget bounds it.
package ledger.promotion

import rego.v1

gated_stages := {"production"}

gated if input.stage in gated_stages

default max_validation_age_days := 90

max_validation_age_days := input.config.max_validation_age_days

default required_validations := ["performance", "bias"]

required_validations := input.config.required_validations

ns_per_day := ((24 * 60) * 60) * 1000000000

# How many items a per-item rule names before it summarises the rest (see "Linear time" above).
max_listed := 20

# --- Input fields, null when absent --------------------------------------------------------------

default stage := null

stage := input.stage

default model_name := null

model_name := input.model.name

default model_version := null

model_version := input.model.version

default registrant := null

registrant := input.model.registered_by

default run_id := null

run_id := input.model.training_run_id

default risk_tier := null

risk_tier := input.model.model_card.risk_tier

default run := null

run := input.training_run if is_object(input.training_run)

# The lists the policy iterates over; a malformed one is a violation below, not a silent skip.
default datasets := []

datasets := input.upstream.datasets if is_array(input.upstream.datasets)

default validations := []

validations := input.validations if is_array(input.validations)

default approvals := []

approvals := input.approvals if is_array(input.approvals)

default open_violations := []

open_violations := input.open_violations if is_array(input.open_violations)

# --- Helpers --------------------------------------------------------------------------------------

# `x` as text: a string is itself, anything else is rendered like `%v`.
text(x) := x if is_string(x)

text(x) := sprintf("%v", [x]) if not is_string(x)

non_empty_string(s) if {
	is_string(s)
	s != ""
}

# RFC 3339 time in ns since the epoch, undefined unless `s` is a string.
# regopy 1.5.2's time.parse_rfc3339_ns rejects the "Z" designator, which the ledger writes; RFC 3339
# section 5.6 defines "Z" (or "z") as "+00:00" and allows it nowhere else, so rewrite it.
ts_ns(s) := time.parse_rfc3339_ns(replace(replace(s, "Z", "+00:00"), "z", "+00:00")) if is_string(s)

model_ref := concat("", ["model ", text(model_name), " version ", text(model_version)])

ds_ref(ds) := concat(":", [text(object.get(ds, "namespace", null)), text(object.get(ds, "name", null))])

# The first `max_listed` of `items` (an array), and the summary of the rest, if any.
listed(items) := array.slice(items, 0, max_listed)

more(items, what) := concat("", ["and ", text(count(items) - max_listed), " more ", what]) if {
	count(items) > max_listed
}

# --- Well-formed input (every stage) --------------------------------------------------------------
# A list the policy iterates over must be a list, or its rules would silently find nothing.

deny contains "policy input has no stage" if not non_empty_string(stage)

deny contains "policy input has no model" if not is_object(input.model)

deny contains "policy input has no valid now (RFC 3339 time)" if not is_number(now_ns)

deny contains "policy input is malformed: upstream.datasets is missing or not a list" if {
	not is_array(input.upstream.datasets)
}

deny contains "policy input is malformed: validations is missing or not a list" if {
	not is_array(input.validations)
}

deny contains "policy input is malformed: approvals is missing or not a list" if {
	not is_array(input.approvals)
}

deny contains "policy input is malformed: open_violations is missing or not a list" if {
	not is_array(input.open_violations)
}

# --- Reproducibility (every stage): the run is recorded, COMPLETE, with a code version -------------

run_label := concat("", ["training run ", text(object.get(run, "id", run_id))]) if run != null

deny contains msg if {
	run == null
	msg := concat("", ["training run ", text(run_id), " of ", model_ref, " is not recorded in the ledger"])
}

deny contains msg if {
	run != null
	object.get(run, "id", null) != run_id
	msg := concat("", ["recorded ", run_label, " is not the training run ", text(run_id), " that ", model_ref, " names"])
}

deny contains msg if {
	run != null
	state := object.get(run, "state", null)
	state != "COMPLETE"
	msg := concat("", [run_label, " is ", text(state), ", not COMPLETE"])
}

deny contains msg if {
	run != null
	not non_empty_string(object.get(run, ["job", "code_version"], null))
	msg := concat("", [
		run_label, " (job ", text(object.get(run, ["job", "namespace"], null)),
		":", text(object.get(run, ["job", "name"], null)), ") has no code version recorded",
	])
}

# --- Traceability (gated stages): every upstream dataset is pinned and has a known origin ----------

unversioned := [ref |
	some ds in datasets
	not non_empty_string(object.get(ds, "version", null))
	ref := ds_ref(ds)
]

unproduced := [ref |
	some ds in datasets
	not non_empty_string(object.get(ds, "produced_by_run", null))
	object.get(ds, "source", false) != true
	ref := ds_ref(ds)
]

deny contains msg if {
	gated
	some ref in listed(unversioned)
	msg := concat("", ["upstream dataset ", ref, " has no version"])
}

deny contains msg if {
	gated
	msg := more(unversioned, "upstream datasets have no version")
}

deny contains msg if {
	gated
	some ref in listed(unproduced)
	msg := concat("", ["upstream dataset ", ref, " was not produced by a recorded run and is not a declared source"])
}

deny contains msg if {
	gated
	msg := more(unproduced, "upstream datasets were not produced by a recorded run and are not declared sources")
}

# --- Data protection: upstream PII needs an approved classification; open violations block ---------

unclassified_pii := [ref |
	some ds in datasets
	"pii" in object.get(ds, "tags", [])
	object.get(ds, "classified", false) != true
	ref := ds_ref(ds)
]

data_protection_issues contains msg if {
	some ref in listed(unclassified_pii)
	msg := concat("", ["upstream dataset ", ref, " is tagged pii but has no approved classification"])
}

data_protection_issues contains msg if {
	msg := more(unclassified_pii, "upstream datasets are tagged pii but have no approved classification")
}

data_protection_issues contains msg if {
	msg := more(open_violations, "open policy violations on upstream datasets")
}

data_protection_issues contains msg if {
	some v in listed(open_violations)
	msg := concat("", [
		"open policy violation ", text(object.get(v, "id", null)),
		" on upstream dataset ", text(object.get(v, "dataset", null)),
		" (run ", text(object.get(v, "run_id", null)), "): ", text(object.get(v, "reason", null)),
	])
}

deny contains msg if {
	gated
	some msg in data_protection_issues
}

warn contains msg if {
	not gated
	some msg in data_protection_issues
}

# --- Verifiability (gated stages) -----------------------------------------------------------------
# For each required type: a passing validation of this version, recorded after the training run
# completed, with a report digest, not older than `max_validation_age_days` before `now`.

now_ns := ts_ns(input.now)

completed_ns := ts_ns(object.get(run, "completed_at", null)) if run != null

max_age_ns := max_validation_age_days * ns_per_day

# `recorded` is [recorded_at in ns], or [] when recorded_at is missing or not RFC 3339.
after_training(recorded) if recorded[0] > completed_ns

within_max_age(recorded) if now_ns - recorded[0] <= max_age_ns

issues_passed(v) := {"did not pass" | object.get(v, "passed", false) != true}

issues_digest(v) := {"has no report digest" | not non_empty_string(object.get(v, "report_digest", null))}

issues_timing(recorded) := {"was not recorded after the training run completed" | not after_training(recorded)}

issues_age(recorded) := {concat("", ["is older than ", text(max_validation_age_days), " days"]) |
	not within_max_age(recorded)
}

# Every recorded validation, checked once: what disqualifies it (nothing: it qualifies).
checked_validations := [c |
	some v in validations
	recorded := [t | t := ts_ns(object.get(v, "recorded_at", null))]
	issues := ((issues_passed(v) | issues_digest(v)) | issues_timing(recorded)) | issues_age(recorded)
	c := {
		"type": object.get(v, "type", null),
		"label": concat("", ["seq ", text(object.get(v, "seq", null)), " ", concat(" and ", sort(issues))]),
		"qualifies": count(issues) == 0,
		"recorded_ns": recorded,
	}
]

# The distinct types (a few; see "Linear time" above), computed once rather than once per required type.
validation_types := {t | some c in checked_validations; t := c.type}

qualifying_types := {t | some c in checked_validations; c.qualifies; t := c.type}

deny contains msg if {
	gated
	some t in required_validations
	not t in validation_types
	msg := concat("", ["no ", text(t), " validation of ", model_ref, " is recorded"])
}

deny contains msg if {
	gated
	some t in required_validations
	candidates := [c | some c in checked_validations; c.type == t]
	count(candidates) > 0
	not t in qualifying_types
	details := sort([c.label | some c in candidates])
	msg := concat("", ["no qualifying ", text(t), " validation of ", model_ref, ": ", concat("; ", details)])
}

# Advisory: the newest qualifying validation of a type is past half of the maximum age.
warn contains msg if {
	gated
	some t in required_validations
	recorded := [c.recorded_ns[0] | some c in checked_validations; c.type == t; c.qualifies]
	count(recorded) > 0
	age_days := (now_ns - max(recorded)) / ns_per_day
	age_days > max_validation_age_days / 2
	msg := concat("", [
		"the newest ", text(t), " validation of ", model_ref, " is ", text(floor(age_days)),
		" days old; it expires after ", text(max_validation_age_days), " days",
	])
}

# --- Sign-off (gated stages), with segregation of duties ------------------------------------------
# An approval for this stage by a principal holding the `approver` role who neither registered the
# model nor trained it (posted events of its training run).

default trainers := set()

trainers := {p | some p in object.get(run, "principals", [])} if run != null

issues_approver(a) := {"names no approver" | not non_empty_string(object.get(a, "approver", null))}

issues_role(a) := {"does not hold the approver role" | not "approver" in object.get(a, "approver_roles", [])}

issues_registrant(a) := {"registered the model" | object.get(a, "approver", null) == registrant}

issues_trainer(a) := {"trained the model" | object.get(a, "approver", null) in trainers}

approval_issues(a) := ((issues_approver(a) | issues_role(a)) | issues_registrant(a)) | issues_trainer(a)

checked_approvals := [c |
	some a in approvals
	object.get(a, "stage", null) == stage
	issues := approval_issues(a)
	c := {
		"approver": object.get(a, "approver", null),
		"label": concat("", [text(object.get(a, "approver", null)), " ", concat(" and ", sort(issues))]),
		"qualifies": count(issues) == 0,
	}
]

# An array, not a set of approvers (see "Linear time" above): the rules below only ask whether
# there is one, and whether there are two distinct ones.
qualifying_approvers := [approver | some c in checked_approvals; c.qualifies; approver := c.approver]

two_qualifying_approvers if {
	some approver in qualifying_approvers
	approver != qualifying_approvers[0]
}

deny contains msg if {
	gated
	count(checked_approvals) == 0
	msg := concat("", ["no approval of ", model_ref, " for stage ", text(stage), " is recorded"])
}

deny contains msg if {
	gated
	count(checked_approvals) > 0
	count(qualifying_approvers) == 0
	msg := concat("", [
		"no qualifying approval of ", model_ref, " for stage ", text(stage),
		" (segregation of duties: the approver must hold the approver role and be neither the registrant nor a trainer): ",
		concat("; ", sort([c.label | some c in checked_approvals])),
	])
}

# Advisory: a high-risk model (when the service includes the model card) deserves two approvers.
warn contains msg if {
	gated
	risk_tier == "high"
	not two_qualifying_approvers
	msg := concat("", [
		model_ref, " has model card risk tier high but ", text(min([count(qualifying_approvers), 1])),
		" qualifying approval(s) for stage ", text(stage), "; two are recommended",
	])
}
