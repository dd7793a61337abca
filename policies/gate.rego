# trimtab's policy gate: decides allow / needs_approval / deny for one planned change.
#
# input.change  : the planned change (id, target, action{verb, ...}, reason, expected_effect)
# input.context : facts at decision time (mode, concurrent_moves, changes_last_hour)
# data.trimtab.grants, data.trimtab.limits : policies/grants.json and policies/limits.json
#
# Every rule adds a sentence to deny, approval or allow; any deny wins, then any approval,
# then allow; a change no rule speaks for is denied (default).
package trimtab.gate

grants := data.trimtab.grants

limits := data.trimtab.limits

verb := input.change.action.verb

known(v) if v in grants.auto

known(v) if v in grants.approval

known(v) if v in grants.never

deny contains "kill switch is on (policies/limits.json: kill_switch)" if limits.kill_switch

deny contains msg if {
	verb in grants.never
	msg := sprintf("verb %s is never done by trimtab (policies/grants.json: never)", [verb])
}

deny contains msg if {
	not known(verb)
	msg := sprintf("verb %s is not granted (not listed in policies/grants.json)", [verb])
}

deny contains msg if {
	verb == "move_replica"
	n := input.context.concurrent_moves + 1
	n > limits.max_concurrent_moves
	msg := sprintf("concurrent moves %d exceed limit %d", [n, limits.max_concurrent_moves])
}

deny contains msg if {
	n := input.context.changes_last_hour + 1
	n > limits.max_changes_per_hour
	msg := sprintf("changes in the last hour %d exceed limit %d", [n, limits.max_changes_per_hour])
}

deny contains msg if {
	verb == "set_knobs"
	some knob, bound in limits.knobs
	value := input.change.action.to[knob]
	value < bound.min
	msg := sprintf("%s %d is below the minimum %d", [knob, value, bound.min])
}

deny contains msg if {
	verb == "set_knobs"
	some knob, bound in limits.knobs
	value := input.change.action.to[knob]
	value > bound.max
	msg := sprintf("%s %d is above the maximum %d", [knob, value, bound.max])
}

approval contains msg if {
	verb in grants.approval
	msg := sprintf("%s needs a person's approval (policies/grants.json: approval)", [verb])
}

# A knob jump larger than max_knob_step_ratio in either direction is unusual enough for a person to look.
approval contains msg if {
	verb == "set_knobs"
	some knob, _ in limits.knobs
	from := input.change.action.from[knob]
	to := input.change.action.to[knob]
	from > 0
	to > 0
	step := max([to / from, from / to])
	step > limits.max_knob_step_ratio
	msg := sprintf("%s changes from %d to %d, more than %v times in one step", [knob, from, to, limits.max_knob_step_ratio])
}

allow contains msg if {
	verb in grants.auto
	msg := sprintf("%s is allowed automatically (policies/grants.json: auto)", [verb])
}

default decision := "deny"

decision := "deny" if count(deny) > 0

decision := "needs_approval" if {
	count(deny) == 0
	count(approval) > 0
}

decision := "allow" if {
	count(deny) == 0
	count(approval) == 0
	count(allow) > 0
}
