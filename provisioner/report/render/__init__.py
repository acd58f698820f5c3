"""HTML for each section of the report, as plain strings.

String building with ``html.escape`` rather than a template engine: a 1,000-node page is
thousands of small, repetitive elements, and the page must render in well under 2 s.
"""
