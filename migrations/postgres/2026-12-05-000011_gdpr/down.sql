DROP TABLE gdpr_keys;
DROP TABLE provider_deletions;
DROP TABLE erased_identities;
DROP TABLE erasures;
DROP TABLE consents;
