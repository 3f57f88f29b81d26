DROP TABLE import_issues;
DROP TABLE imports;
