"""A local server behaving like the OpenAI Assistants API: upstream for demos, tests, benchmarks."""

from tollhouse.simulator.app import create_app
from tollhouse.simulator.config import SimulatorConfig
from tollhouse.simulator.state import RecordedRequest, Simulator

__all__ = ["RecordedRequest", "Simulator", "SimulatorConfig", "create_app"]
