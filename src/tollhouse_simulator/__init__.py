"""A local server behaving like the OpenAI API: upstream for demos, tests and benchmarks."""

from tollhouse_simulator.app import create_app
from tollhouse_simulator.config import SimulatorConfig
from tollhouse_simulator.state import RecordedRequest, Simulator

__all__ = ["RecordedRequest", "Simulator", "SimulatorConfig", "create_app"]
