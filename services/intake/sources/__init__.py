"""Where leads come from: servers (JSON), website forms and Tilda, Zoom webhooks, webinar
registrants and attendees, attendee CSV files."""
