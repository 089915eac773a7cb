"""The review of a definition version: what became of the leads each criterion touched."""
