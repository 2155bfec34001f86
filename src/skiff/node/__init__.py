"""Node agents: the kubelet of skiff (later: runc pods) and simulated nodes for control-plane tests."""
