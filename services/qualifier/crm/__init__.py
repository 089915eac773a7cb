"""CRM connectors: routed leads pushed into the sales team's CRM, and the CRM's stage
changes pulled back as lifecycle events (Bitrix24, Kommo/amoCRM, HubSpot)."""
