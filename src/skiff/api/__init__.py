"""Object helpers shared by every component: errors, meta, selectors, patches, schemas, tables."""
