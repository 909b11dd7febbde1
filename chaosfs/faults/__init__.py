"""Faults: the operation names (methods.py), what a rule is (rules.py), the rule table and
what a firing rule does (engine.py), and the gate every request passes (_gate.pyx)."""
