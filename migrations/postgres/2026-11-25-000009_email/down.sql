DROP TABLE nurture_enrollments;
DROP TABLE tasks;
DROP TABLE suppressions;
DROP TABLE email_events;
DROP TABLE emails;
