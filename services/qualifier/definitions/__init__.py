"""Lead definitions: the document, conditions, patterns, parsing, versions, diff, back-test."""
