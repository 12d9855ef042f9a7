"""A local server behaving like the OpenAI API: upstream for demos, tests and benchmarks."""

from tollhouse.simulator.app import create_app
from tollhouse.simulator.config import SimulatorConfig
from tollhouse.simulator.state import RecordedRequest, Simulator

__all__ = ["RecordedRequest", "Simulator", "SimulatorConfig", "create_app"]
