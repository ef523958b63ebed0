"""Jinja templates of the HTML reports (shipped inside the wheel)."""
