"""The agent's unit tests (pure logic, wire formats), by the agent's folders."""
