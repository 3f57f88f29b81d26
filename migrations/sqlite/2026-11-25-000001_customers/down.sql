DROP TABLE interactions;
DROP TABLE customer_tags;
DROP TABLE customers;
