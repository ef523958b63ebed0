"""Defensive methods: unlearning, backdoor exposure, data protection, prompt guards."""
