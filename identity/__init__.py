"""did:key identities, signatures and verifiable credentials."""
