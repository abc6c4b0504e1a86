# Default data-access policy. Conftest conventions: access is allowed iff `deny` is empty.
#
# Input (built by the service for POST /api/v1/access/decisions):
#   principal  {"name", "roles": [...], "clearances": ["pii", ...]}
#   dataset    {"namespace", "name", "tags": [...]}  (effective tags, propagated through lineage)
#   action     "read" (the only action this policy knows; anything else is denied)
#   purpose    why the data is needed, e.g. "fraud-investigation"
#   config     {"allowed_purposes": {"pii": ["fraud-investigation", ...], "phi": [...], ...}}
#
# A dataset carrying a sensitive tag (pii, phi, confidential) may be read only by a principal holding
# a clearance for each such tag, and only for a purpose configured for each such tag. A sensitive tag
# with no configured purposes admits no purpose (fail closed). Untagged data is readable by any
# authenticated principal; authentication and namespace scopes are the service's job.
#
# Messages are built with `concat`, not `sprintf` (see promotion.rego for the regopy 1.5.2 reason).
package ledger.access

import rego.v1

sensitive_tags := {"pii", "phi", "confidential"}

known_actions := {"read"}

default principal_name := null

principal_name := input.principal.name

default clearances := []

clearances := input.principal.clearances

default dataset_tags := []

dataset_tags := input.dataset.tags

default action := null

action := input.action

default purpose := null

purpose := input.purpose

default allowed_purposes := {}

allowed_purposes := input.config.allowed_purposes

text(x) := x if is_string(x)

text(x) := sprintf("%v", [x]) if not is_string(x)

default dataset_namespace := null

dataset_namespace := input.dataset.namespace

default dataset_name := null

dataset_name := input.dataset.name

dataset_ref := concat(":", [text(dataset_namespace), text(dataset_name)])

purposes_text(allowed) := "none configured" if count(allowed) == 0

purposes_text(allowed) := concat(", ", sort([text(p) | some p in allowed])) if count(allowed) > 0

# --- Well-formed input: a list this policy iterates over must be a list ----------------------------

deny contains "access input has no principal" if not is_object(input.principal)

deny contains "access input has no dataset" if not is_object(input.dataset)

deny contains "access input is malformed: dataset.tags is not a list" if not is_array(dataset_tags)

deny contains "access input is malformed: principal.clearances is not a list" if not is_array(clearances)

deny contains "access input is malformed: config.allowed_purposes is not an object" if {
	not is_object(allowed_purposes)
}

# --- Decision --------------------------------------------------------------------------------------

deny contains msg if {
	not action in known_actions
	msg := concat("", ["unknown action ", text(action), " on dataset ", dataset_ref, " (known actions: read)"])
}

dataset_sensitive_tags contains tag if {
	some tag in dataset_tags
	tag in sensitive_tags
}

deny contains msg if {
	some tag in dataset_sensitive_tags
	not tag in clearances
	msg := concat("", [
		"principal ", text(principal_name), " lacks the ", tag,
		" clearance required to read dataset ", dataset_ref,
	])
}

deny contains msg if {
	some tag in dataset_sensitive_tags
	allowed := object.get(allowed_purposes, tag, [])
	not purpose in allowed
	msg := concat("", [
		"purpose ", text(purpose), " is not allowed for ", tag, " data (dataset ", dataset_ref,
		"); allowed purposes: ", purposes_text(allowed),
	])
}
