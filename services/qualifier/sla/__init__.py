"""Answer deadlines: the SLA watch, working hours, sales members and their absences."""
