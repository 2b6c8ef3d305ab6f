"""What a person looks at: episode and lake reports."""
