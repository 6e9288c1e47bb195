"""The only modules that hold boto3 clients for the data path: DynamoDB stores, the Management API, Step Functions."""
