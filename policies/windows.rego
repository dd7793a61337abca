# Maintenance windows (policies/windows.json): while a window is open, changes that touch its target are denied.
#
# input.windows : the windows open at decision time (id, target, target_name, end, entities, reason),
#                 computed by trimtab from data.trimtab.windows; empty when none is open.
package trimtab.gate

# A placement change touches a window on the node or pool it adds to, moves from or to, or removes from.
touches(w, a) if w.target.linstor_node == a.node

touches(w, a) if w.target.linstor_node == a.from_node

touches(w, a) if w.target.linstor_node == a.to_node

touches(w, a) if w.target.storage_pool == a.pool

touches(w, a) if w.target.storage_pool == a.from_pool

touches(w, a) if w.target.storage_pool == a.to_pool

# A place-count change may place anywhere: every LINSTOR window freezes it.
touches(w, a) if {
	a.verb == "set_place_count"
	not w.target.cassandra
}

# A re-drive sends messages into an entity whose ingest the window holds back.
touches(w, a) if {
	a.verb == "redrive_dead_letters"
	a.entity in w.entities
}

deny contains msg if {
	some w in input.windows
	touches(w, input.change.action)
	msg := sprintf("maintenance window %s on %s is open until %s and freezes changes that touch it (policies/windows.json)", [w.id, w.target_name, w.end])
}

# Re-drives are capped per run so a re-drive cannot swamp Cassandra (limits.json: max_redrive_messages).
deny contains msg if {
	input.change.action.verb == "redrive_dead_letters"
	limit := object.get(data.trimtab.limits, "max_redrive_messages", 10000)
	input.change.action.count > limit
	msg := sprintf("re-drive of %d messages exceeds the limit %d per run (policies/limits.json: max_redrive_messages)", [input.change.action.count, limit])
}
