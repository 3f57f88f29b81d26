DROP TABLE events;
DROP TABLE pipeline_steps;
DROP TABLE pipeline_runs;
DROP TABLE lead_scores;
