DROP TABLE do_not_call;
DROP TABLE call_deliveries;
DROP TABLE call_segments;
DROP TABLE calls;
