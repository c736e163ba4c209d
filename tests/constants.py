"""What every test shares by value: the simulator's secret and Chert's example chat."""

from gateway.simulator.state import DOCS_CHAT_ID

SECRET = "sim-secret-7f3c2a9e41b8d5"
# The chat id Chert's own pages use; the simulator takes it.
CHAT_ID = DOCS_CHAT_ID
