"""The KPI database: its tables, the generations of folded rows, and the bulk writes folding
makes."""
