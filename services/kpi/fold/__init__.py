"""From events to numbers: each lead's merged state, its facts, and the batch writes that
keep the aggregates; the live consumer and the rebuild that folds the topics again."""
