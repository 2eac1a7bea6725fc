"""How a replica is started and reached: one strategy a module (local popen, detached daemon,
another host), each with its link and its bootstrap."""
