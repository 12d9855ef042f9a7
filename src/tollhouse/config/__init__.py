"""What tollhouse is told: settings from the environment and the policy file."""
