/** A fresh message id: 22 characters of URL-safe base64 from 128 random bits. */
export declare function messageId(): string;
