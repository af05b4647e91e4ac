package node

// GatherStarts returns how many cosignature gathers the node has started.
func (n *Node) GatherStarts() int {
	n.gathers.mu.Lock()
	defer n.gathers.mu.Unlock()
	return n.gathers.starts
}
