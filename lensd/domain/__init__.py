"""What a fit is: records and their validation, samples, instances, model trees."""
