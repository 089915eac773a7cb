"""Configuration (scope `definitions:admin`): the forms and webinars leads come from."""
