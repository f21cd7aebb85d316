"""Alert handling: the state machine, rule expressions, label matchers, routing and silences."""
