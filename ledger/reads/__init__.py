"""Read services that join domains: the lineage graph as a principal may see it (scope from security,
redaction by classification). They sit above lineage and security, as governance does."""
