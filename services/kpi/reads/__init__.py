"""Answers: summary, funnel and timeseries over a period, from the stored sums, exact
durations, and plan and spend spread over the period."""
