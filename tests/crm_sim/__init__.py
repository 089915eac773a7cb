"""Local stand-ins for Bitrix24, Kommo and HubSpot: real HTTP servers that follow each
vendor's documented formats and failure modes (`../shared/crm-reference.md` and the
vendor pages each module cites), driven by tests through a `/_sim/` control API."""
