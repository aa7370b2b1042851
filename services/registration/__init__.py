"""The registration service: programs, cohorts, seats, registrations and waitlists."""
