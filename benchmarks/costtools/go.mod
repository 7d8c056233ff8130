module costtools

go 1.21
