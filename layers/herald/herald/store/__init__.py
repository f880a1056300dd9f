"""Data access: pynamodb models and repositories. Only this package talks to DynamoDB."""
