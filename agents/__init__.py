"""Value-based agents (DQN, Rainbow), replay, environment adapters and actor-learner loops."""
