"""Back-ends of the commands that are more than an audit: ``expose``, ``protect``,
``evaluate-protection``, ``unlearn``, ``guard`` and ``hysac``. Each is an importable function
that validates its inputs at the boundary and writes its outputs under the one output policy
(``redteam.core.outputs``); ``redteam.cli`` parses the options and calls it."""
