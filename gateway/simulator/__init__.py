"""A stand-in for Chert that follows its documentation (chert-api/)."""

from gateway.simulator.app import ChertSimulator
from gateway.simulator.state import Faults, RecordedRequest

__all__ = ["ChertSimulator", "Faults", "RecordedRequest"]
